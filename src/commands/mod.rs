//! One module per subcommand.

pub mod demo;
pub mod generate;
pub mod process;
pub mod query;
pub mod replay;
