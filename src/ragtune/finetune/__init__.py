"""Fine-tuning: prepare and clean task data, train (LoRA | top layers | full), export."""
