//! Whether a call is made for someone waiting on its answer, or ahead of need.
//!
//! A cache refreshing an entry in the background, or a frontend prefetching what a user
//! may look at next, makes *background* calls; every other call is *interactive*. The
//! rate limiter keeps the last share of its burst for interactive calls, so background
//! work never takes the budget from a user on screen. The request carries its priority
//! ([`CallPriority`]): the cache sets it on the refreshes it sends, the limiter reads it.

/// The priority of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Someone waits for the answer.
    #[default]
    Interactive,
    /// Made ahead of need: a cache refresh, a prefetch.
    Background,
}

/// A request that carries its [`Priority`].
pub trait CallPriority {
    /// The priority of this call.
    fn priority(&self) -> Priority;
    /// Sets the priority of this call.
    fn set_priority(&mut self, priority: Priority);
}
