//! Typed client of the JSM organization REST API: one async method per
//! operation, paging, auth, retries through the shared [`Throttle`].
//!
//! It knows nothing of CSV, plans, reports or progress bars: callers get typed
//! values or an [`ApiError`] that says whether it is transient or fatal, and
//! how many attempts the call took.
//!
//! [`Throttle`]: crate::throttle::Throttle

pub mod answer;
pub mod auth;
pub mod breaker;
pub mod client;
pub mod customers;
pub mod error;
pub mod models;
pub mod operations;
pub mod path;
pub mod retry;

pub use auth::Auth;
pub use client::{Called, Client, ClientConfig, PropertyWrite};
pub use customers::CustomerCreate;
pub use error::{ApiError, ErrorKind};
pub use models::{EntityProperty, Organization, Page, PropertyKeys, ServiceDesk, User};
pub use retry::RetryPolicy;
