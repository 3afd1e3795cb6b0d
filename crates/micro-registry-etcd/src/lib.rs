//! etcd registry backend (work in progress; see issue 7).
