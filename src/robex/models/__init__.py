"""Classifiers (all take [0, 1] images, normalise inside and return logits).

``cifar_cnn`` (Table 2 CNN), ``double_mnist_cnn``, ``resnet`` (ResNet-18 for 32x32), ``vgg``
(SmallVGG, VGG-16), ``c2f`` (coarse-to-fine), ``imagenet_zoo`` (torchvision backbones),
``normalize``, ``io`` (save/load ``model.pt``). Import from the defining module: this file imports
nothing, so a stage's import closure (its dvc.yaml deps) stays tight.
"""
