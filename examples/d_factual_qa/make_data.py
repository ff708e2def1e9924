"""Write the factual-QA data of this example: the catalogue of a fictional museum, the Halvard Maritime Museum (facts
no base model can know), and question-answer pairs about it, split so that every test question asks a fact seen in
training in other words. Deterministic: the same files on every run. Usage: python make_data.py [--out data]"""

import argparse
import json
import random
from pathlib import Path

KINDS = {  # object type -> (materials it may be made of, the years such objects were made in)
    "sextant": (["brass and ebony", "brass and ivory", "bronze with a silvered arc"], (1760, 1910)),
    "octant": (["ebony and brass", "mahogany and ivory"], (1735, 1850)),
    "chronometer": (["brass in a mahogany box", "gilt brass in a rosewood box"], (1770, 1910)),
    "pocket compass": (["brass and glass", "silver and glass"], (1700, 1900)),
    "ship's bell": (["cast bronze", "bell metal"], (1650, 1900)),
    "telescope": (["brass and leather", "mahogany and brass"], (1680, 1900)),
    "barometer": (["walnut and glass", "oak, brass and glass"], (1700, 1900)),
    "lighthouse lens": (["flint glass in a bronze frame", "crown glass in a brass frame"], (1825, 1920)),
    "chart table": (["teak", "oak with brass fittings"], (1750, 1900)),
    "diving helmet": (["copper and brass", "tinned copper"], (1840, 1920)),
    "astrolabe": (["cast brass", "gilt bronze"], (1550, 1680)),
    "ship model": (["pearwood and linen", "boxwood and silk"], (1650, 1900)),
}
NAMES = ["Marrow", "Kestrel", "Tollund", "Vasquez", "Halloran", "Ingrid", "Saltmarsh", "Oriel", "Brandvik", "Corvina",
         "Duvall", "Eskdale", "Fenwick", "Gullstrand", "Hesketh", "Islay", "Jorvik", "Kittiwake", "Lindqvist",
         "Morwenna", "Nordhavn", "Ottoline", "Pellinor", "Quillan", "Rosmarin", "Skerryvore", "Tamsin", "Ulverston",
         "Valdane", "Wrenfield", "Yarrowby", "Zennor", "Arbroath", "Bellrock", "Cromarty", "Dunmore"]
# workshops that outlived their founders: the catalogue spans 1550-1920
MAKERS = ["the Aldgate Instrument Works", "Brenner and Sons of Kiel", "the Tollund Foundry",
          "the Halse Workshop of Bergen", "the Lisbon Royal Workshop", "the Aune Instrument Makers of Trondheim",
          "the Greenock Brass Company", "the Veit Workshop of Hamburg"]
GALLERIES = ["Gallery 1, the Harbour Hall", "Gallery 2, the Chart Room", "Gallery 3, the Lantern Room",
             "Gallery 4, the Whalers' Gallery", "Gallery 5, the Deep Water Room", "Gallery 6, the Clock Tower"]
QUESTIONS = {  # fact -> (phrasing seen in training for every fact, second phrasing), answer template
    "maker": (("Who made the {o}?", "Which workshop built the {o}?"), "The {o} was made by {v}."),
    "year": (("When was the {o} made?", "In what year was the {o} built?"), "The {o} was made in {v}."),
    "gallery": (("Where is the {o} displayed?", "In which gallery can visitors see the {o}?"),
                "It is displayed in {v}."),
    "material": (("What is the {o} made of?", "Which materials was the {o} made from?"), "The {o} is made of {v}."),
}


def catalogue(rng: random.Random) -> list[dict]:
    kinds = list(KINDS)
    objects = []
    for i, name in enumerate(NAMES):
        kind = kinds[i % len(kinds)]
        materials, (first_year, last_year) = KINDS[kind]
        objects.append({"id": f"obj-{i + 1:02d}", "name": f"{name} {kind}", "maker": rng.choice(MAKERS),
                        "year": rng.randint(first_year, last_year), "gallery": rng.choice(GALLERIES),
                        "material": rng.choice(materials)})
    return objects


def qa_pair(obj: dict, fact: str, phrasing: int) -> dict:
    questions, answer = QUESTIONS[fact]
    return {"id": f"{obj['id']}-{fact}-{phrasing + 1}", "instruction": questions[phrasing].format(o=obj["name"]),
            "output": answer.format(o=obj["name"], v=obj[fact])}


def qa_pairs(objects: list[dict], rng: random.Random) -> dict[str, list[dict]]:
    """Every fact's first phrasing goes to train; its second phrasing goes to train (60%), val (20%) or test (20%)."""
    facts = [(obj, fact) for obj in objects for fact in QUESTIONS]
    rng.shuffle(facts)
    parts = {"train": [], "val": [], "test": []}
    for n, (obj, fact) in enumerate(facts):
        parts["train"].append(qa_pair(obj, fact, 0))
        parts["train" if n % 10 < 6 else "val" if n % 10 < 8 else "test"].append(qa_pair(obj, fact, 1))
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    out = parser.parse_args().out
    rng = random.Random(2024)
    objects = catalogue(rng)
    parts = qa_pairs(objects, rng)
    out.mkdir(parents=True, exist_ok=True)
    (out / "catalogue.json").write_text(json.dumps(objects, indent=2) + "\n")
    for part, pairs in parts.items():
        with open(out / f"facts_{part}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
    print(f"{len(objects)} objects, {sum(map(len, parts.values()))} question-answer pairs: "
          + ", ".join(f"{part} {len(pairs)}" for part, pairs in parts.items()) + f" (in {out}/)")


if __name__ == "__main__":
    main()
