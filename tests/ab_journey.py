"""A journey with every kind of branch, for the tests of what the console draws and counts: an
A/B split with a holdout, an `if` on the cart's value, a `wait_for` an order with both arms, and a
plain wait. `definitions_with_ab` copies the shipped definitions and adds it."""

from __future__ import annotations

import shutil
from pathlib import Path

from definitions.loader import PACKAGE_DIR

AB_JOURNEY = "ab_console"
AB_YAML = """\
name: ab_console
title: 购物车试验
category: transactional
entry:
  event: cart.abandoned
  key: customer
  reentry: after_exit
goal: order.paid
steps:
  - split:
      holdout: 0.2
      branches:
        - name: variant_a
          weight: 1
          steps:
            - send: {id: nudge_a, channel: sms, template: winback_sleeping}
        - name: variant_b
          weight: 1
          steps:
            - send: {id: nudge_b, channel: sms, template: winback_sleeping}
  - if:
      condition: "event.data.cart_value >= 100"
      then:
        - wait_for:
            event: order.created
            timeout: 3d
            on_event:
              - send: {id: thanks, channel: sms, template: winback_sleeping}
            on_timeout:
              - send: {id: last_call, channel: sms, template: winback_sleeping}
      else:
        - wait: 2d
        - send: {id: small_cart, channel: sms, template: winback_sleeping}
"""
#: Where its instances wait (definitions.schema walk_steps paths): a big cart's, a small cart's.
WAIT_FOR_ORDER = "steps[1].if.then[0]"
WAIT_SMALL = "steps[1].if.else[0]"


def definitions_with_ab(tmp_path: Path) -> Path:
    """A copy of the shipped definitions with the A/B journey added."""
    target = tmp_path / "definitions"
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (target / f"{AB_JOURNEY}.yaml").write_text(AB_YAML, encoding="utf-8")
    return target
