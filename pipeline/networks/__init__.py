"""The networks and their data: layer discovery (torch.fx), the model registry, the Fashion-MNIST twins,
the evaluation and training images, and the checks a model passes before it is measured."""
