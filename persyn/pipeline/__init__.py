"""The method's steps, one module per job, as the stages call them: prompts, embeddings, the request cache and
runner, generation, rewards, routers and routing, budgets, fallback, the dataset and its card, training and
evaluation."""
