"""finetune: Curates datasets, runs LoRA fine-tune jobs, evaluates, promotes and rolls back model versions."""
