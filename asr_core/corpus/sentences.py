"""A generator of customer-service utterances, in spoken form.

Greetings, intents (cancel, upgrade, billing dispute, address change, password
reset, ...), account and card numbers and dates read out as words, names,
street addresses, product names, yes/no answers. Deterministic given a
`random.Random`. Text is produced already spoken (numbers as words) so the
synthesizer says exactly the reference.
"""
from __future__ import annotations

import random

from asr_core.text import digits_to_words, normalize, number_to_words, ordinal_to_words, year_to_words

FIRST = ["james", "mary", "robert", "patricia", "john", "jennifer", "michael", "linda", "david",
         "elizabeth", "william", "barbara", "richard", "susan", "joseph", "jessica", "thomas",
         "sarah", "charles", "karen", "daniel", "nancy", "matthew", "lisa", "anthony", "betty",
         "mark", "sandra", "steven", "ashley", "paul", "emily", "andrew", "donna", "kevin",
         "michelle", "brian", "carol", "george", "amanda", "maria", "ahmed", "priya", "wei",
         "carlos", "sofia", "olga", "kenji", "fatima", "luis", "anna", "peter", "grace", "omar"]
LAST = ["smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez",
        "martinez", "hernandez", "lopez", "gonzalez", "wilson", "anderson", "thomas", "taylor",
        "moore", "jackson", "martin", "lee", "perez", "thompson", "white", "harris", "sanchez",
        "clark", "ramirez", "lewis", "robinson", "walker", "young", "allen", "king", "wright",
        "scott", "torres", "nguyen", "hill", "flores", "green", "adams", "nelson", "baker",
        "hall", "rivera", "campbell", "mitchell", "carter", "roberts", "patel", "kim", "chen"]
STREETS = ["main", "oak", "maple", "cedar", "pine", "elm", "washington", "lake", "hill", "park",
           "sunset", "river", "church", "market", "spring", "highland", "franklin", "jefferson",
           "lincoln", "madison", "broad", "mill", "forest", "meadow", "valley", "bridge"]
STREET_KIND = ["street", "avenue", "road", "drive", "lane", "boulevard", "court", "place", "way"]
CITIES = ["springfield", "riverside", "franklin", "greenville", "bristol", "clinton", "salem",
          "fairview", "madison", "georgetown", "arlington", "ashland", "dover", "oxford",
          "jackson", "burlington", "manchester", "milton", "newport", "auburn", "denver", "boston",
          "chicago", "houston", "phoenix", "seattle", "portland", "atlanta", "dallas", "austin"]
PRODUCTS = ["premium plan", "basic plan", "family plan", "unlimited data plan", "fiber internet",
            "home phone service", "streaming package", "sports package", "router", "modem",
            "smart thermostat", "security camera", "mobile hotspot", "international calling",
            "cloud backup", "extended warranty", "business plan", "student discount",
            "prepaid card", "travel insurance", "credit card", "savings account",
            "checking account", "loyalty program", "gift card", "annual subscription"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
COMPANIES = ["northwind", "acme", "bluewave", "summit", "horizon", "evergreen", "pinnacle",
             "brightline", "silverstone", "redwood"]


def _digits(rng: random.Random, n: int) -> str:
    return digits_to_words("".join(str(rng.randint(0, 9)) for _ in range(n)))


def _amount(rng: random.Random) -> str:
    dollars = rng.choice([rng.randint(1, 99), rng.randint(100, 999), rng.randint(1000, 5000)])
    cents = rng.choice([0, 0, rng.randint(1, 99)])
    s = number_to_words(dollars) + (" dollar" if dollars == 1 else " dollars")
    return s + (f" and {number_to_words(cents)} cents" if cents else "")


def _date(rng: random.Random) -> str:
    month, day = rng.choice(MONTHS), ordinal_to_words(rng.randint(1, 28))
    return rng.choice([f"{month} {day}", f"the {day} of {month}", rng.choice(DAYS), f"next {rng.choice(DAYS)}"])


def _year(rng: random.Random) -> str:
    return year_to_words(rng.randint(1950, 2029))


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _address(rng: random.Random) -> str:
    num = number_to_words(rng.randint(1, 9999)) if rng.random() < 0.5 else _digits(rng, rng.randint(2, 4))
    return f"{num} {rng.choice(STREETS)} {rng.choice(STREET_KIND)}" + (
        f" in {rng.choice(CITIES)}" if rng.random() < 0.5 else "")


def _phone(rng: random.Random) -> str:
    return f"{_digits(rng, 3)} {_digits(rng, 3)} {_digits(rng, 4)}"


_TEMPLATES = [
    # greetings and openers
    lambda r: f"hello my name is {_name(r)}",
    lambda r: f"hi this is {r.choice(FIRST)} calling about my {r.choice(PRODUCTS)}",
    lambda r: f"good {r.choice(['morning', 'afternoon', 'evening'])} i need some help with my account",
    lambda r: f"thank you for calling {r.choice(COMPANIES)} how can i help you today",
    lambda r: r.choice(["yes", "no", "yes please", "no thank you", "that is correct", "that's right",
                        "not really", "sure", "okay", "yeah that works", "no that's wrong",
                        "could you repeat that please", "sorry i didn't catch that",
                        "i'm still here", "hold on a second", "one moment please"]),
    # intents
    lambda r: f"i would like to cancel my {r.choice(PRODUCTS)}",
    lambda r: f"i want to upgrade to the {r.choice(PRODUCTS)}",
    lambda r: f"can i downgrade my {r.choice(PRODUCTS)} to something cheaper",
    lambda r: f"there is a charge of {_amount(r)} on my bill that i don't recognize",
    lambda r: f"i was billed twice for the {r.choice(PRODUCTS)} this month",
    lambda r: f"i'd like to dispute a charge from {_date(r)}",
    lambda r: f"i moved and need to change my address to {_address(r)}",
    lambda r: f"my new address is {_address(r)}",
    lambda r: "i forgot my password and can't log in",
    lambda r: f"i need to reset my password the reset email never arrived",
    lambda r: f"my {r.choice(PRODUCTS)} stopped working {r.choice(['yesterday', 'this morning', 'last week', 'two days ago'])}",
    lambda r: f"why is my bill {_amount(r)} this month",
    lambda r: f"i want to make a payment of {_amount(r)}",
    lambda r: f"can you send a technician on {_date(r)}",
    lambda r: f"when will my refund of {_amount(r)} arrive",
    lambda r: f"i'd like to speak to a supervisor please",
    lambda r: f"i want to report a lost card",
    lambda r: f"please transfer me to the {r.choice(['billing', 'technical support', 'sales', 'retention', 'fraud'])} department",
    lambda r: f"is there a discount if i sign up for the {r.choice(PRODUCTS)}",
    lambda r: f"my internet has been slow since {_date(r)}",
    lambda r: f"the {r.choice(PRODUCTS)} i ordered never arrived",
    lambda r: f"i'd like to return the {r.choice(PRODUCTS)}",
    lambda r: f"how much does the {r.choice(PRODUCTS)} cost per month",
    # identifiers read out
    lambda r: f"my account number is {_digits(r, r.randint(6, 10))}",
    lambda r: f"the card number is {_digits(r, 4)} {_digits(r, 4)} {_digits(r, 4)} {_digits(r, 4)}",
    lambda r: f"the last four digits are {_digits(r, 4)}",
    lambda r: f"my phone number is {_phone(r)}",
    lambda r: f"my zip code is {_digits(r, 5)}",
    lambda r: f"my date of birth is {r.choice(MONTHS)} {ordinal_to_words(r.randint(1, 28))} {_year(r)}",
    lambda r: f"the order number is {_digits(r, r.randint(5, 8))}",
    lambda r: f"my pin is {_digits(r, 4)}",
    lambda r: f"the expiration date is {r.choice(MONTHS)} {_year(r)}",
    lambda r: f"it's {r.choice(FIRST)} spelled {' '.join(r.choice(FIRST)[:4])}",
    lambda r: f"you can reach me at {_phone(r)} after {number_to_words(r.randint(1, 12))} o'clock",
    lambda r: f"my email is {r.choice(FIRST)} dot {r.choice(LAST)} at {r.choice(['gmail', 'yahoo', 'outlook'])} dot com",
    lambda r: f"the account is under the name {_name(r)}",
    lambda r: f"i have been a customer for {number_to_words(r.randint(2, 30))} years",
    lambda r: f"i called {number_to_words(r.randint(2, 9))} times about this already",
]


def sentence(rng: random.Random) -> str:
    """One spoken-form customer-service utterance (already normalized)."""
    s = rng.choice(_TEMPLATES)(rng)
    if rng.random() < 0.15:
        s = rng.choice(["um ", "uh ", "well ", "so ", "okay so ", "right "]) + s
    if rng.random() < 0.1:
        s = s + rng.choice([" thank you", " please", " thanks", " if possible"])
    return normalize(s)


def sentences(rng: random.Random, n: int, exclude: set[str] | None = None) -> list[str]:
    """n utterances, none of them in `exclude` (to hold test sentences out)."""
    out: list[str] = []
    tries = 0
    while len(out) < n and tries < n * 50:
        tries += 1
        s = sentence(rng)
        if exclude is None or s not in exclude:
            out.append(s)
    return out
