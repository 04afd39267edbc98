//! Decode: turns one request body into the parts of an envelope. Pure: no IO, no axum.
