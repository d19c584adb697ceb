"""Model code for capabilities; the engine loads these through ModelSpecs."""
