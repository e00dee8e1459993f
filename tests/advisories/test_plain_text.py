"""Feed text to the words citizens read: markup off, escaped markup too, a bare "<" kept."""

import pytest

from service.advisories.formats.common import plain_text


@pytest.mark.parametrize(
    ("feed", "read"),
    [
        ("<p>Leave the area.</p><p>Call 112.</p>", "Leave the area.\nCall 112."),
        ("Flooding<br/>Avoid travel", "Flooding\nAvoid travel"),
        # Escaped once more by the feed: the XML parser hands us "<p>…</p>" as text.
        ("&lt;p&gt;Leave &lt;b&gt;now&lt;/b&gt;.&lt;/p&gt;", "Leave now."),
        (
            "&lt;ul&gt;&lt;li&gt;North&lt;/li&gt;&lt;li&gt;South&lt;/li&gt;&lt;/ul&gt;",
            "North\nSouth",
        ),
        ("Levels &lt; 3 and &gt; 1 are safe", "Levels < 3 and > 1 are safe"),
        ("Temperatures < 5 °C; winds > 90 km/h", "Temperatures < 5 °C; winds > 90 km/h"),
        ("AT&amp;T lines <!-- internal note --> are down", "AT&T lines are down"),
        ("Q&amp;A: 3 &lt;4", "Q&A: 3 <4"),
        # Angle brackets that are words, not HTML (a review: the second pass ate them).
        ("Reply &lt;YES&gt; to confirm", "Reply <YES> to confirm"),
        ("<p>Write to &lt;seoul@mofa.go.kr&gt; or call</p>", "Write to <seoul@mofa.go.kr> or call"),
        ("<p>Escaped on purpose: &lt;b&gt;</p>", "Escaped on purpose: <b>"),
        # A probe's headline: an unclosed right-to-left override showed the link after it
        # reversed, and a bell and a terminal escape reached the SMS as they came.
        (
            "Flood warning \u202e.gro.live//:sptth ta ofni\x07\x1b[2J - Stay safe \u2066(Box)",
            "Flood warning .gro.live//:sptth ta ofni[2J - Stay safe (Box)",
        ),
        ("Leave now\u2028Go north\x00", "Leave now\nGo north"),
    ],
)
def test_citizens_read_words_not_markup(feed, read):
    assert plain_text(feed) == read


def test_a_long_text_is_cut_at_a_word():
    assert plain_text("word " * 20, limit=22) == "word word word word …"
