//! Images: references, the OCI content store, registry pull/push and layer unpacking.
