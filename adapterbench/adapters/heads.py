"""What a base does to its LM head's output (Gemma-2/3 soft-capping, Cohere's logit_scale, Granite's
logits_scaling), found by a probe against the model's own forward: the scorer's and the trainer's fast paths apply
the head themselves, on the positions they need."""

from __future__ import annotations

import torch


def _post_head_candidates(config):
    """Each way a transformers CausalLM is known to treat its head's output, written as its forward writes it (the
    same ops in the same order, so the probe can ask for bitwise equality)."""
    yield lambda logits: logits
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        yield lambda logits: torch.tanh(logits / cap) * cap
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, (int, float)):
        yield lambda logits: logits * scale
    scaling = getattr(config, "logits_scaling", None)
    if isinstance(scaling, (int, float)):
        yield lambda logits: logits / scaling


def find_post_head(causal_lm, device):
    """The candidate that turns head(body(x)) into exactly the model's own logits on a probe input, or None (then a
    fast path must not apply the head itself). The probe runs in eval mode (no dropout), which is restored after."""
    ids = torch.arange(3, 11, device=device).unsqueeze(0) % causal_lm.config.vocab_size
    training = causal_lm.training
    causal_lm.eval()
    try:
        with torch.no_grad():
            expected = causal_lm(input_ids=ids).logits
            head = causal_lm.get_output_embeddings()(causal_lm.get_decoder()(input_ids=ids).last_hidden_state)
            return next((post for post in _post_head_candidates(causal_lm.config)
                         if torch.equal(post(head), expected)), None)
    finally:
        causal_lm.train(training)
