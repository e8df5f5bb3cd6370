//! One module per subcommand: its arguments and how it calls the library.

pub mod audit;
pub mod console;
pub mod data_args;
pub mod export;
pub mod infer;
pub mod info;
pub mod loss_curves;
pub mod model_args;
pub mod pack;
pub mod reproduce;
pub mod signals;
pub mod synth;
pub mod train;
pub mod validate;
