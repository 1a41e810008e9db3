//! `/dev/fuse`: mounting, the classic read/write loop, notifications.
