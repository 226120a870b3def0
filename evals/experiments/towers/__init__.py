"""Small backbones swapped in as the bundled easy-VQA LLaVA's vision tower, trained and swept with FastV."""
