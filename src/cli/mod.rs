//! One module per subcommand: its arguments and how it calls the library.

pub mod info;
pub mod loss_curves;
pub mod synth;
pub mod train;
