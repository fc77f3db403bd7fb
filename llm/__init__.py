"""pathdep.llm: staged fine-tuning and local unlearning of Llama/Qwen models (paper Sec. 4)."""
