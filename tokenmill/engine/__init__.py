"""The inference engine: requests, scheduler, block manager, model runner, sampler, detokenizer."""
