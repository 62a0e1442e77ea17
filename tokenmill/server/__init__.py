"""HTTP serving: the judge contract, the OpenAI API, FastDeploy requests, health and metrics."""
