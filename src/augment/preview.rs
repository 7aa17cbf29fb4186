//! `vlinder augment`: writes transformed versions of one photo to a folder, like Keras'
//! `flow(save_to_dir=...)`, and optionally a contact sheet of the original beside them.
