"""A Hydra sweeper for unions of grids (``hydra/sweeper: union``), used by the experiment presets."""
