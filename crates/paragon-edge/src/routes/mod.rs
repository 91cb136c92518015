//! Request handlers.

pub mod admin;
pub mod ops;
pub mod reload;
pub mod users;
