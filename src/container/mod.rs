//! Container records, state and the OCI runtime spec built from image config + flags.
