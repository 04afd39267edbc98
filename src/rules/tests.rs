//! The index against evaluating every rule, over generated rules and envelopes.
