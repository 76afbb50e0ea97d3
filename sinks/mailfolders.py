"""Where a source folder lands in a target mailbox: special-use folders and their localised names.

A message's folder at the source (`ItemRef.location`, levels joined by "/") and the special use
the source announced for it (RFC 6154: `\\Sent`, `\\Trash`, `\\Junk`, `\\Drafts`, `\\Archive`) decide
its folder at the target:

1. a folder the source marked as special (`special_use` in the item's meta) lands in the target's
   folder of that use, whatever either is called;
2. otherwise a top-level folder whose name is a well-known localised name of a special folder
   (Exchange's "Sent Items", "Gesendete Elemente", "Éléments envoyés", "Deleted Items",
   "Junk E-mail", …) lands there too, and its sub-folders below it;
3. every other folder keeps its name and its place in the tree; INBOX stays INBOX.

The target's folder for a use is the one its server marks with that attribute (LIST
RETURN (SPECIAL-USE)); else the department's `folder_names` (`Sent: Gesendet`); else the
English default ("Sent", "Trash", "Junk", "Drafts", "Archive").
"""

from __future__ import annotations

__all__ = ["USES", "DEFAULT_NAMES", "LOCALISED", "use_of", "target_levels"]

#: The special uses a target folder is chosen for.
USES = ("\\Sent", "\\Trash", "\\Junk", "\\Drafts", "\\Archive")
DEFAULT_NAMES = {"\\Sent": "Sent", "\\Trash": "Trash", "\\Junk": "Junk", "\\Drafts": "Drafts",
                 "\\Archive": "Archive"}

_NAMES = {
    "\\Sent": ["Sent", "Sent Items", "Sent Messages", "Sent Mail", "Gesendet", "Gesendete Elemente",
               "Gesendete Objekte", "Gesendete Nachrichten", "Éléments envoyés", "Envoyés", "Messages envoyés",
               "Elementi inviati", "Posta inviata", "Elementos enviados", "Verzonden items", "Skickat"],
    "\\Trash": ["Trash", "Deleted Items", "Deleted Messages", "Bin", "Papierkorb", "Gelöschte Elemente",
                "Gelöschte Objekte", "Éléments supprimés", "Corbeille", "Posta eliminata", "Elementos eliminados",
                "Verwijderde items", "Cestino"],
    "\\Junk": ["Junk", "Junk E-mail", "Junk E-Mail", "Junk Email", "Junk Mail", "Spam", "Junk-E-Mail",
               "Courrier indésirable", "Posta indesiderata", "Correo no deseado", "Ongewenste e-mail"],
    "\\Drafts": ["Drafts", "Entwürfe", "Brouillons", "Bozze", "Borradores", "Concepten"],
    "\\Archive": ["Archive", "Archives", "Archiv", "Archivio", "Archivo", "Archief"],
}
#: casefolded localised name -> special use
LOCALISED = {name.casefold(): use for use, names in _NAMES.items() for name in names}


def use_of(name: str) -> str | None:
    """The special use a top-level folder called `name` has by its name alone, or None."""
    return LOCALISED.get(name.strip().casefold())


def _configured(folder_names: dict[str, str], use: str) -> str | None:
    want = use.lstrip("\\").casefold()
    return next((v for k, v in folder_names.items() if k.lstrip("\\").casefold() == want), None)


def name_for(use: str, announced: dict[str, str], folder_names: dict[str, str]) -> str:
    """The target folder (levels joined by "/") of one special use."""
    return announced.get(use) or _configured(folder_names, use) or DEFAULT_NAMES.get(use) or use.lstrip("\\")


def target_levels(location: str, special_use: str | None, announced: dict[str, str],
                  folder_names: dict[str, str]) -> list[str]:
    """The levels of the target folder for a source folder.

    `announced` maps a use to the target's folder of that use (levels joined by "/"), as its server
    marked them; `folder_names` is the department's fallback."""
    levels = [lv.replace("%2F", "/") for lv in location.split("/") if lv != ""] or ["INBOX"]
    if special_use in USES:
        return name_for(special_use, announced, folder_names).split("/")
    if levels[0].upper() == "INBOX":
        return ["INBOX", *levels[1:]]
    use = use_of(levels[0])
    if use is not None:
        return [*name_for(use, announced, folder_names).split("/"), *levels[1:]]
    return levels
