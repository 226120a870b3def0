"""AutoBot and FTWT channel pruning of a ResNet and a VGG trained on scikit-learn's digits."""
