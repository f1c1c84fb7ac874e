//! All operating-system calls live under this module.
