"""What is fitted or chosen on the training split, never on evaluation images: recovery (BatchNorm
statistics, fine-tuning), the Fashion-MNIST twins' training, the learned predictors' training, and the
operating-point search."""
