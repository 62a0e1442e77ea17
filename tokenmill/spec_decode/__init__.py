"""Speculative decoding: cheap proposals for a sequence's next tokens, verified in one target pass.

`proposers` guess tokens, `speculator` decides per step who speculates and how far (and learns whether it
pays), `rejection_sampler` turns the target's logits over [last token + proposals] into the emitted
tokens so that the output distribution is exactly the target's.
"""
