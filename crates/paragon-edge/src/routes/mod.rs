//! Request handlers.

pub mod admin;
pub mod docs;
pub mod ops;
pub mod reload;
pub mod users;
