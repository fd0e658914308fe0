//! Everything SMH-specific: wire types and (later) the token service.

pub mod operation;
pub mod token;
pub mod wire;
