//! WAL: segment names, timelines, the segment validator. Being written.
