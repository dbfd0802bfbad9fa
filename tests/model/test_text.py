"""xfd.model.text: the CLIP-ReID prompt learner and frozen text encoder reproduce CLIP's own text features."""

import open_clip
import pytest
import torch

TEMPLATE = "A photo of X X X X person."


def test_text_encoder_on_token_embeddings_equals_clip_encode_text(make_model):
    model = make_model()
    clip_text = model.text.encoder
    torch.manual_seed(0)
    source = open_clip.create_model("clip-tiny", pretrained=None)  # registered by the model build
    model.text.encoder.load_state_dict({k: v for k, v in source.state_dict().items()
                                        if k.split(".")[0] in ("transformer", "positional_embedding", "ln_final",
                                                               "text_projection")})
    ids = open_clip.tokenize(["a photo of a man in red.", "two people"], context_length=16)
    with torch.no_grad():
        ours = clip_text(source.token_embedding(ids), ids.argmax(dim=-1))
        reference = source.encode_text(ids)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_prompt_learner_splices_identity_tokens_into_the_template(make_model):
    model = make_model()
    learner = model.text.prompt_learner
    assert learner.ctx.shape == (8, 4, 64)  # (classes, n_ctx, text width)
    labels = torch.tensor([3, 5])
    prompts = learner(labels)
    assert prompts.shape == (2, 16, 64)
    # SOT a photo of | X X X X | person . EOT pad...
    assert learner.prefix.shape[1] == 4 and learner.eot_index.item() == 10
    torch.testing.assert_close(prompts[:, 4:8], learner.ctx[labels])
    torch.testing.assert_close(prompts[1, :4], learner.prefix[0])
    torch.testing.assert_close(prompts[0, 8:], learner.suffix[0])


def test_learned_tokens_equal_to_the_word_embeddings_give_the_templates_text_feature(tmp_path, make_model):
    torch.manual_seed(2)
    source = open_clip.create_model("clip-tiny", pretrained=None, force_quick_gelu=True)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = make_model(f"backbone.pretrained={tmp_path / 'w.pt'}")
    ids = open_clip.tokenize([TEMPLATE], context_length=16)
    with torch.no_grad():
        model.text.prompt_learner.ctx[2] = source.token_embedding(ids[0, 4:8])  # the word "x" four times
        ours = model.text(torch.tensor([2]))
        reference = source.encode_text(ids)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_cache_holds_every_identity_and_is_required_for_stage_two(make_model):
    model = make_model()
    with pytest.raises(RuntimeError, match="cache_features"):
        model.text.cached_features()
    cached = model.text.cache_features(batch_size=3)
    assert cached.shape == (8, 64)
    with torch.no_grad():
        torch.testing.assert_close(cached, model.text(torch.arange(8)))
    assert model.text.cached_features() is cached
    assert "text.cached" in model.state_dict() and bool(model.state_dict()["text.has_cache"])


def test_stage_one_trains_only_the_identity_tokens(make_model):
    model = make_model()
    model.set_stage(1)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["text.prompt_learner.ctx"]
    feats = model.text(torch.tensor([0, 1, 1]))
    feats.sum().backward()
    grad = model.text.prompt_learner.ctx.grad
    assert grad[:2].abs().sum() > 0 and grad[2:].abs().sum() == 0
    assert all(p.grad is None for n, p in model.named_parameters() if n != "text.prompt_learner.ctx")
