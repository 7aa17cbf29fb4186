//! A trained model as training leaves it and every later stage reads it: the model directory
//! (its weights, the unknown-ness statistics, `model.json`) and the card in `model.json` that
//! records how the network was built, trained, calibrated and scored. The networks themselves
//! live in `model/`, which knows nothing of files.

pub mod card;
pub mod directory;

pub use card::ModelCard;
pub use directory::{
    Assessment, ModelDir, TrainedModel, WeightsChoice, answers, embed, predict_probabilities,
};
