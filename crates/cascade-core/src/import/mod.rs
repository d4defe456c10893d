//! Importers. Placeholder module list filled below.
