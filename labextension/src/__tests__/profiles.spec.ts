import { chosenProfile, IProfileList, profileChoices, settingsText } from '../profiles';

const LIST: IProfileList = {
  folder: '/home/me/.config/cellpipe/profiles',
  default: 'team',
  profiles: [
    {
      name: 'broken',
      path: '/p/broken.json',
      description: '',
      context: null,
      argo: {},
      error: 'profile broken (/p/broken.json) is not valid JSON: line 1'
    },
    {
      name: 'team',
      path: '/p/team.json',
      description: "the team's cluster",
      context: 'prod',
      argo: { namespace: 'ml', image_pull_secrets: ['pull-secret'] },
      error: ''
    }
  ]
};

describe('the profile select', () => {
  it('offers none first, then each profile, the default marked', () => {
    expect(profileChoices(LIST).map(c => c.label)).toEqual(['none', 'broken', 'team (default)']);
    expect(profileChoices(LIST).map(c => c.value)).toEqual(['', 'broken', 'team']);
  });

  it('disables a broken profile and says why in its title', () => {
    const broken = profileChoices(LIST)[1];
    expect(broken.disabled).toBe(true);
    expect(broken.title).toBe('profile broken (/p/broken.json) is not valid JSON: line 1');
  });

  it("titles a profile with its description, settings and file", () => {
    expect(profileChoices(LIST)[2].title).toBe(
      `the team's cluster: context=prod, namespace=ml, image_pull_secrets=["pull-secret"] (/p/team.json)`
    );
    expect(settingsText({ ...LIST.profiles[1], context: null, argo: {} })).toBe('no settings');
  });

  it('offers only none before the list has come', () => {
    expect(profileChoices(null).map(c => c.value)).toEqual(['']);
    expect(chosenProfile(null, 'team')).toBe('');
  });

  it("selects the server's default until the user chooses", () => {
    expect(chosenProfile(LIST, null)).toBe('team');
    expect(chosenProfile(LIST, '')).toBe('');
  });

  it('never selects a profile that is gone or broken', () => {
    expect(chosenProfile(LIST, 'deleted')).toBe('team');
    expect(chosenProfile(LIST, 'broken')).toBe('team');
    expect(chosenProfile({ ...LIST, default: 'broken' }, null)).toBe('');
  });
});
