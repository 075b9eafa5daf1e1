//! RTMP publisher (being written).
