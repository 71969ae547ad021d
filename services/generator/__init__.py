"""generator: Builds prompts from templates and context and streams answers from Triton, with citations."""
