//! serin's configuration: the files people write, decoded with every problem
//! reported at once (file:line:column, field path, what is wrong), and turned
//! into validated models that the rest of serin trusts.

mod beside;
pub use beside::beside;
pub mod decode;
pub mod error;
mod guard;
pub mod http_client;
pub mod kind;

pub use decode::{Decode, Node, Spanned, parse_duration};
pub use error::{ConfigError, ConfigErrors, Problems, Span};
pub use guard::INTERNAL_ERROR;
pub mod jwks;
pub mod proxy;
pub mod stack;
pub mod tls;
