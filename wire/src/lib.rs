//! settle-wire: the wire schema between platforms and Settle nodes (protobuf messages, framed,
//! versioned). Pure encoding and decoding; no I/O and no settlement rules.
