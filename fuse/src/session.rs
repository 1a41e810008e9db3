//! The filesystem trait, `INIT`, and the dispatch both transports share.
