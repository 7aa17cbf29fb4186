//! The command line's flags, stage by stage as the library is laid out: each struct is what one
//! command (or a part shared by several) accepts, with its help text, and converts into the
//! library's configuration. The defaults come from the library's `Default` impls where it has
//! them, so that they are written once.

pub mod augment;
pub mod check;
pub mod dataset;
pub mod evaluate;
pub mod model;
pub mod predict;
pub mod queue;
pub mod serve;
pub mod sources;
pub mod train;
