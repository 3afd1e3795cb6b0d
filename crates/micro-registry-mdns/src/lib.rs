//! mDNS registry backend (work in progress; see issue 6).
