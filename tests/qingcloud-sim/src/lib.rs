//! A strict QingCloud API simulator with hot-plug into network namespaces.
