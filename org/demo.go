package org

import (
	"context"
	"crypto/rand"
	"embed"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/internal/db"
)

// demodata is the real tree of Zhejiang (NBS 2023, see demodata/README.md),
// embedded so that a binary alone can show a populated system.
//
//go:embed demodata/*.csv
var demodata embed.FS

// DemoLogin is a demo account that can sign in.
type DemoLogin struct {
	Role     string `json:"role"`
	Unit     string `json:"unit"` // names from the province down: 浙江省 杭州市 西湖区
	Name     string `json:"name"`
	Login    string `json:"login"`
	Mobile   string `json:"mobile"`
	Password string `json:"password"`
}

// demoUnits are the units that get demo members, province down to a grid,
// with the people each gets: how many of each role, and their titles.
var demoUnits = []struct {
	code   string
	people []demoPost
}{
	{"33", []demoPost{{"admin", 3, "系统管理员", ""}, {"leader", 6, "副秘书长", "秘书长"}, {"staff", 40, "办公厅干部", ""}, {"auditor", 3, "审计专员", ""}}},
	{"3301", []demoPost{{"admin", 2, "系统管理员", ""}, {"leader", 6, "副市长", "市长"}, {"staff", 50, "市政府办干部", ""}, {"auditor", 2, "审计专员", ""}}},
	{"330106", []demoPost{{"admin", 2, "系统管理员", ""}, {"leader", 5, "副区长", "区长"}, {"staff", 60, "区政府办干部", ""}, {"auditor", 1, "审计专员", ""}}},
	{"330106004", []demoPost{{"admin", 1, "系统管理员", ""}, {"leader", 4, "街道副主任", "街道主任"}, {"staff", 45, "街道干部", ""}}},
	{"330106004053", []demoPost{{"leader", 2, "社区副书记", "社区书记"}, {"staff", 12, "社区工作者", ""}}},
	{"330106004053001", []demoPost{{"grid_worker", 2, "网格员", ""}}},
	{"330106004053002", []demoPost{{"grid_worker", 2, "网格员", ""}}},
	{"330106004053003", []demoPost{{"grid_worker", 2, "网格员", ""}}},
}

// demoPost is count people of a role at a unit; the first of them is the
// unit's head (a leader) when head names the title.
type demoPost struct {
	role  string
	count int
	title string
	head  string
}

// demoSignIns are the demo people who get a login and a password: the first
// of a role at a unit.
var demoSignIns = []struct{ login, role, code string }{
	{"demo-admin", "admin", "33"},
	{"demo-leader", "leader", "330106"},
	{"demo-staff", "staff", "330106004"},
	{"demo-grid", "grid_worker", "330106004053001"},
	{"demo-auditor", "auditor", "33"},
}

const (
	demoSurnames = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
	demoGiven    = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍建红文辉鹏飞宇浩然晨阳欣怡子涵梓萱思远嘉怡俊杰志强海燕春梅国庆立新晓东丹凤"
)

// LoadDemo fills an empty database with a demonstration: the real tree of
// Zhejiang (27,036 units), three generated grids per village, and about 300
// members holding every role at a province, a city, a county, a township, a
// village and its grids. Five of them get a login and a random password,
// hashed with hash, and are returned for the caller to show once. On a
// database that has any unit it does nothing and returns no logins. All of
// it is one transaction; progress goes to out (nil: silent).
func LoadDemo(ctx context.Context, pool *pgxpool.Pool, hash func(password string) string, out io.Writer) ([]DemoLogin, error) {
	start := time.Now()
	opts := ImportOptions{Progress: out}
	var logins []DemoLogin
	err := db.InTx(ctx, pool, func(tx pgx.Tx) error {
		// Two nodes starting at once: the second waits here, then sees units.
		if err := importLock(ctx, tx); err != nil {
			return err
		}
		var any bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM org_units)`).Scan(&any); err != nil || any {
			return err
		}
		opts.progressf("demo: loading the tree of Zhejiang, grids and demo members")
		sub, err := fs.Sub(demodata, "demodata")
		if err != nil {
			return err
		}
		if _, err := importNBS(ctx, tx, sub, func(name string) string { return "demodata/" + name }, opts); err != nil {
			return fmt.Errorf("demo tree: %w", err)
		}
		if _, err := generateGrids(ctx, tx, 3, opts); err != nil {
			return fmt.Errorf("demo grids: %w", err)
		}
		in, first := demoMembers()
		if err := in.probs.err(); err != nil {
			return fmt.Errorf("demo members: %w", err)
		}
		if _, err := importMembers(ctx, tx, in, opts); err != nil {
			return fmt.Errorf("demo members: %w", err)
		}
		for _, s := range demoSignIns {
			p := in.people[first[s.role+"@"+s.code]]
			pw := demoPassword()
			if _, err := tx.Exec(ctx, `UPDATE accounts SET login = $2, password_hash = $3 WHERE mobile = $1`, p.mobile, s.login, hash(pw)); err != nil {
				return err
			}
			var unit string
			if err := tx.QueryRow(ctx, `SELECT string_agg(a.name, ' ' ORDER BY a.level) FROM org_units u
				JOIN org_units a ON a.path @> u.path WHERE u.code = $1`, mustCode(s.code)).Scan(&unit); err != nil {
				return err
			}
			logins = append(logins, DemoLogin{Role: s.role, Unit: unit, Name: p.name, Login: s.login, Mobile: p.mobile, Password: pw})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if logins != nil {
		opts.progressf("demo: loaded in %s", time.Since(start).Round(10*time.Millisecond))
	}
	return logins, nil
}

// demoMembers makes the demo register, the same every time. first maps
// "role@code" to the first person placed so.
func demoMembers() (*memberInput, map[string]int32) {
	in := newMemberInput("demo")
	first := map[string]int32{}
	rng := mrand.New(mrand.NewPCG(2023, 6))
	sur, given := []rune(demoSurnames), []rune(demoGiven)
	mobile := 13800000000
	for _, u := range demoUnits {
		for _, p := range u.people {
			for i := 0; i < p.count; i++ {
				name := string(sur[rng.IntN(len(sur))]) + string(given[rng.IntN(len(given))])
				if rng.IntN(3) > 0 {
					name += string(given[rng.IntN(len(given))])
				}
				mobile++
				title, leader := p.title, "否"
				if i == 0 && p.head != "" {
					title, leader = p.head, "是"
				}
				m := fmt.Sprint(mobile)
				in.add(len(in.rows)+1, name, m, u.code, title, leader, p.role)
				key := p.role + "@" + u.code
				if _, ok := first[key]; !ok {
					first[key] = in.byMobile[m]
				}
			}
		}
	}
	// 兼职: the head of the county also looks after the township.
	head := in.people[first["leader@330106"]]
	in.add(len(in.rows)+1, head.name, head.mobile, "330106004", "联系领导", "否", "")
	in.finish()
	return in, first
}

// demoPassword is 12 random characters that are easy to read and type.
func demoPassword() string {
	const alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
	b := make([]byte, 12)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func mustCode(c string) string {
	n, err := NormalizeCode(c)
	if err != nil {
		panic(err)
	}
	return n
}
