"""A Lightning research template: sequence and image classifiers driven by LightningCLI."""
