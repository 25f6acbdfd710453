#!/usr/bin/env python3
"""Deterministic benchmark data for scripts/bench.sh.

  gen.py import DIR ORGS MEMBERS PROPS DESKS    -> import input (CSV files)
  gen.py seed   DIR ORGS MEMBERS PROPS DESKS    -> a snapshot directory (JSONL) to seed the sandbox
  gen.py night  DIR ORGS MEMBERS PROPS DESKS    -> the same snapshot after a night of changes (for diff):
                                                   every 97th membership left, one joined per 10th org,
                                                   every 100th org renamed
  gen.py crm    DIR ORGS PEOPLE                  -> DIR/crm.csv (Organization,Email,Full name) and
                                                    DIR/customers.csv (the even half, known to the site)

Desk ids are 10001.. . Account ids are unique per membership.
"""
import csv, json, os, sys


def names(n):
    return [f"Bench Org {i:06d}" for i in range(n)]


def acc(o, m):
    return f"712020:bench-{o:06d}-{m:05d}"


def crm(out, orgs, people):
    """A CRM export naming people by email; the even half already exist on the site."""
    os.makedirs(out, exist_ok=True)
    ns = names(orgs)
    with open(f"{out}/crm.csv", "w", newline="") as f, open(f"{out}/customers.csv", "w", newline="") as c:
        w, k = csv.writer(f, lineterminator="\n"), csv.writer(c, lineterminator="\n")
        w.writerow(["Organization", "Email", "Full name"])
        k.writerow(["account_id", "email", "display_name"])
        for i in range(people):
            email = f"person{i:06d}@bench.example"
            w.writerow([ns[i % orgs], email, f"Person {i}"])
            if i % 2 == 0:
                k.writerow([f"712020:bench-known-{i:06d}", email, f"Person {i}"])


def main():
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "crm":
        return crm(out, int(sys.argv[3]), int(sys.argv[4]))
    orgs, members, props, desks = (int(x) for x in sys.argv[3:7])
    os.makedirs(out, exist_ok=True)
    ns = names(orgs)
    desk_ids = [str(10001 + d) for d in range(desks)]
    if mode == "import":
        with open(f"{out}/organizations.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["name"])
            for n in ns:
                w.writerow([n])
        with open(f"{out}/members.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["organization", "account_id"])
            for o, n in enumerate(ns):
                for m in range(members):
                    w.writerow([n, acc(o, m)])
        with open(f"{out}/properties.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["organization", "key", "value"])
            for o, n in enumerate(ns):
                for p in range(props):
                    w.writerow([n, f"bench.p{p}", json.dumps({"org": o, "tier": "gold", "n": p})])
        with open(f"{out}/service_desks.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["organization", "service_desk_id"])
            for n in ns:
                for d in desk_ids:
                    w.writerow([n, d])
    elif mode in ("seed", "night"):
        night = mode == "night"
        if night:
            ns = [n + " (renamed)" if o % 100 == 0 else n for o, n in enumerate(ns)]
        with open(f"{out}/organizations.jsonl", "w") as f:
            for o, n in enumerate(ns):
                f.write(json.dumps({"id": o + 1, "name": n}) + "\n")
        with open(f"{out}/members.jsonl", "w") as f:
            for o, n in enumerate(ns):
                joined = [members] if night and o % 10 == 0 else []
                for m in list(range(members)) + joined:
                    if night and (o + m) % 97 == 0:
                        continue
                    f.write(json.dumps({"organization": n, "organization_id": o + 1, "account_id": acc(o, m)}) + "\n")
        with open(f"{out}/properties.jsonl", "w") as f:
            for o, n in enumerate(ns):
                for p in range(props):
                    f.write(json.dumps({"organization": n, "organization_id": o + 1, "key": f"bench.p{p}",
                                        "value": {"org": o, "n": p}}) + "\n")
        with open(f"{out}/service_desks.jsonl", "w") as f:
            for o, n in enumerate(ns):
                for d in desk_ids:
                    f.write(json.dumps({"organization": n, "organization_id": o + 1, "service_desk_id": d}) + "\n")
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
