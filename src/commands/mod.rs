//! One module per subcommand.

pub mod checkpoints;
pub mod demo;
pub mod generate;
pub mod process;
pub mod query;
pub mod replay;
pub mod serve;
